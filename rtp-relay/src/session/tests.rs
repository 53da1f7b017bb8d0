//! A session's media through the pure book and the real userspace forwarder over loopback
//! sockets: the test plays the driver, carrying out the book's commands as a shard does.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::book::{BookConfig, MediaBook, MediaCommand};
use crate::counters::StreamCounters;
use crate::ports::{MediaInterface, ReleaseSink};
use crate::relay::{Relay, RelayConfig};

/// A shard's book and the relay, on ports below the kernel's ephemeral range (32768-), so no
/// test peer bound to port 0 can sit on one of the relay's own ports (which the relay refuses
/// as a destination).
struct Rig {
    book: MediaBook,
    relay: Arc<Relay>,
    released: Arc<Mutex<Vec<(usize, u16)>>>,
    sink: ReleaseSink,
    streams: HashMap<StreamId, Arc<StreamCounters>>,
    /// The tap behind each tap name a session was given.
    taps: HashMap<Arc<str>, Arc<Copies>>,
}

/// A tap keeping what it is given.
#[derive(Debug, Default)]
struct Copies(Mutex<Vec<(SocketAddr, SocketAddr, Vec<u8>)>>);

impl crate::forwarder::PacketTap for Copies {
    fn packet(&self, _at: std::time::SystemTime, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.0.lock().expect("lock").push((from, to, bytes.to_vec()));
    }
}

fn rig(port_min: u16, port_max: u16) -> Rig {
    let iface = |name: &str, ip: &str| MediaInterface {
        name: name.into(),
        bind: ip.parse().expect("ip"),
        advertise: None,
        port_min,
        port_max,
    };
    let interfaces = vec![iface("v4", "127.0.0.1"), iface("v6", "::1")];
    let cfg = RelayConfig {
        interfaces: interfaces.clone(),
        latch_window: Duration::from_millis(2000),
        workers: 2,
        max_packet_rate: 1000,
    };
    let released = Arc::new(Mutex::new(Vec::new()));
    let sink: ReleaseSink = {
        let released = released.clone();
        Arc::new(move |i, p| released.lock().expect("lock").push((i, p)))
    };
    let book = MediaBook::new(BookConfig { interfaces, max_streams: DEFAULT_MAX_STREAMS, policy: None }, 0, 1, [7; 32]);
    let relay = Relay::start(&cfg).expect("relay starts");
    Rig { book, relay, released, sink, streams: HashMap::new(), taps: HashMap::new() }
}

impl Rig {
    fn session(&self, sides: [SideOptions; 2]) -> Session {
        self.book.session(sides).expect("session")
    }

    /// What a shard does after each engine step: carry out the commands, take back pairs.
    fn run(&mut self) {
        while let Some(c) = self.book.pop_command() {
            match c {
                MediaCommand::Open { stream, ports, spec, tap } => {
                    let tap = tap
                        .map(|name| self.taps.entry(name).or_default().clone() as Arc<dyn crate::forwarder::PacketTap>);
                    let counters = self.relay.open(stream, ports, spec, tap, &self.sink).expect("the pairs bind");
                    self.streams.insert(stream, counters);
                }
                MediaCommand::Update { stream, spec } => self.relay.update(stream, spec),
                MediaCommand::Close { stream } => {
                    self.streams.remove(&stream);
                    self.relay.close(stream);
                }
            }
        }
        for (i, p) in std::mem::take(&mut *self.released.lock().expect("lock")) {
            self.book.released(i, p);
        }
    }

    fn update(&mut self, s: &mut Session, from: usize, media: &[Offered]) -> Anchoring {
        let a = s.update(&mut self.book, from, media);
        self.run();
        a
    }

    fn close(&mut self, s: &mut Session) {
        s.close(&mut self.book);
        self.run();
    }

    /// Pairs come back when the worker has closed the sockets, just after the close.
    fn wait_ports_free(&mut self) {
        for _ in 0..200 {
            self.run();
            if self.book.ports_in_use() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("ports still in use: {}", self.book.ports_in_use());
    }
}

fn sides(a: &str, b: &str, symmetric_a: bool) -> [SideOptions; 2] {
    [
        SideOptions {
            interface: a.into(),
            symmetric: symmetric_a,
            dtmf_filtering: false,
            signalling: None,
            srtp: Default::default(),
        },
        SideOptions {
            interface: b.into(),
            symmetric: false,
            dtmf_filtering: false,
            signalling: None,
            srtp: Default::default(),
        },
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
        security: Default::default(),
    }
}

fn peer(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).expect("bind peer");
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    s
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
    let mut r = rig(22000, 22099);
    let (caller, callee) = (peer("127.0.0.1"), peer("127.0.0.1"));
    let caller_rtcp = peer("127.0.0.1");
    let mut s = r.session(sides("v4", "v4", false));
    let mut offer = offered(&caller);
    offer.rtcp = Some(caller_rtcp.local_addr().expect("addr"));
    let to_b = r.update(&mut s, 0, &[offer]).adverts[0].clone().expect("relayed");
    let to_a = r.update(&mut s, 1, &[offered(&callee)]).adverts[0].clone().expect("relayed");
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
    let ids = s.stream_ids();
    let counters = ids[0].and_then(|id| r.streams.get(&id)).expect("the stream is open");
    assert!(r.relay.last_activity(counters).is_some());
    let st = r.relay.stats();
    assert!(st.forwarded >= 2, "{st:?}");
    assert_eq!(r.book.ports_in_use(), 2);
    r.close(&mut s);
    r.wait_ports_free();
}

/// `log_rtp`: a tapped session's packets are copied as they crossed the wire, in (from the
/// sender to the relay) and out (from the relay to the receiver); a stranger's are not.
#[test]
fn a_tapped_session_copies_what_it_relays() {
    let mut r = rig(23000, 23099);
    let (caller, callee, stranger) = (peer("127.0.0.1"), peer("127.0.0.1"), peer("127.0.0.2"));
    let mut s = r.session(sides("v4", "v4", false)).tapped(Some("call-1".into()));
    let to_b = r.update(&mut s, 0, &[offered(&caller)]).adverts[0].clone().expect("relayed");
    let to_a = r.update(&mut s, 1, &[offered(&callee)]).adverts[0].clone().expect("relayed");
    let (relay_a, relay_b) = (SocketAddr::new(to_a.addr, to_a.port), SocketAddr::new(to_b.addr, to_b.port));
    stranger.send_to(&rtp(9), relay_a).expect("send");
    caller.send_to(&rtp(1), relay_a).expect("send");
    assert_eq!(recv(&callee).0, rtp(1));
    callee.send_to(&rtp(2), relay_b).expect("send");
    assert_eq!(recv(&caller).0, rtp(2));
    let copies = r.taps.get("call-1").expect("the tap").0.lock().expect("lock").clone();
    let (a, b) = (caller.local_addr().expect("addr"), callee.local_addr().expect("addr"));
    assert_eq!(
        copies,
        [
            (a, relay_a, rtp(1).to_vec()),
            (relay_b, b, rtp(1).to_vec()),
            (b, relay_b, rtp(2).to_vec()),
            (relay_a, a, rtp(2).to_vec())
        ],
    );
    r.close(&mut s);
    r.wait_ports_free();
}

#[test]
fn ipv4_caller_bridged_to_ipv6_callee() {
    let mut r = rig(22100, 22199);
    let (caller, callee) = (peer("127.0.0.1"), peer("::1"));
    let mut s = r.session(sides("v4", "v6", false));
    let to_b = r.update(&mut s, 0, &[offered(&caller)]).adverts[0].clone().expect("relayed");
    assert!(to_b.addr.is_ipv6());
    let to_a = r.update(&mut s, 1, &[offered(&callee)]).adverts[0].clone().expect("relayed");
    assert!(to_a.addr.is_ipv4());
    caller.send_to(&rtp(7), (to_a.addr, to_a.port)).expect("send");
    assert_eq!(recv(&callee).0, rtp(7));
    callee.send_to(&rtp(8), (to_b.addr, to_b.port)).expect("send");
    assert_eq!(recv(&caller).0, rtp(8));
    r.close(&mut s);
}

/// An IPv6 source read after IPv4 datagrams by the same worker is reported whole: a symmetric
/// IPv6 side latches onto its real address and gets the answer's audio (recvmmsg keeps each
/// header's address length from the datagram before; `userspace/worker.rs`).
#[test]
fn a_symmetric_ipv6_side_latches_its_real_address_after_ipv4_packets() {
    let mut r = rig(22300, 22399);
    let (caller, callee) = (peer("::1"), peer("127.0.0.1"));
    let mut s = r.session(sides("v6", "v4", true));
    let to_b = r.update(&mut s, 0, &[offered(&caller)]).adverts[0].clone().expect("relayed");
    let to_a = r.update(&mut s, 1, &[offered(&callee)]).adverts[0].clone().expect("relayed");
    // IPv4 first, through the same worker; A is not latched yet: to its SDP address.
    callee.send_to(&rtp(1), (to_b.addr, to_b.port)).expect("send");
    assert_eq!(recv(&caller).0, rtp(1));
    caller.send_to(&rtp(2), (to_a.addr, to_a.port)).expect("send");
    assert_eq!(recv(&callee).0, rtp(2));
    callee.send_to(&rtp(3), (to_b.addr, to_b.port)).expect("send");
    let (pkt, from) = recv(&caller);
    assert_eq!(pkt, rtp(3), "the latched IPv6 address is the caller's");
    assert!(from.is_ipv6());
    r.close(&mut s);
}

#[test]
fn symmetric_caller_behind_nat_gets_audio_and_a_new_answer_retargets() {
    let mut r = rig(22200, 22299);
    let (nat, callee, callee2) = (peer("127.0.0.1"), peer("127.0.0.1"), peer("127.0.0.1"));
    let mut s = r.session(sides("v4", "v4", true));
    // The caller's SDP names a port nobody listens on; it really sends from `nat`.
    let mut sdp = offered(&nat);
    sdp.rtp = Some("127.0.0.1:9".parse().expect("addr"));
    let to_b = r.update(&mut s, 0, &[sdp]).adverts[0].clone().expect("relayed");
    let to_a = r.update(&mut s, 1, &[offered(&callee)]).adverts[0].clone().expect("relayed");
    nat.send_to(&rtp(1), (to_a.addr, to_a.port)).expect("send");
    assert_eq!(recv(&callee).0, rtp(1));
    callee.send_to(&rtp(2), (to_b.addr, to_b.port)).expect("send");
    assert_eq!(recv(&nat).0, rtp(2), "symmetric RTP: back to where the caller sends from");
    // A re-INVITE answer moves the callee to another port.
    r.update(&mut s, 1, &[offered(&callee2)]);
    nat.send_to(&rtp(3), (to_a.addr, to_a.port)).expect("send");
    assert_eq!(recv(&callee2).0, rtp(3));
    assert_eq!(r.relay.stats().latches, 1);
    r.close(&mut s);
}

#[test]
fn a_rejected_stream_releases_its_ports_and_a_small_pool_never_leaks() {
    // Two pairs per interface: one call with one stream fits, per side.
    let mut r = rig(22800, 22803);
    let caller = peer("127.0.0.1");
    for _ in 0..50 {
        let mut s = r.session(sides("v4", "v4", false));
        assert!(r.update(&mut s, 0, &[offered(&caller)]).failure.is_none(), "ports are free again");
        let mut rejected = offered(&caller);
        rejected.rejected = true;
        assert_eq!(r.update(&mut s, 1, &[rejected]).adverts, vec![None]);
        assert_eq!(s.open_streams(), 0);
        r.close(&mut s);
        r.wait_ports_free();
    }
    let mut a = r.session(sides("v4", "v4", false));
    assert!(r.update(&mut a, 0, &[offered(&caller)]).failure.is_none());
    let mut b = r.session(sides("v4", "v4", false));
    let none_left = r.update(&mut b, 0, &[offered(&caller)]);
    assert!(none_left.nothing_anchored());
    assert!(matches!(none_left.failure, Some(RelayError::NoPorts { .. })));
    assert_eq!(r.book.allocation_failures, 1);
    r.close(&mut a);
    r.close(&mut b);
}

#[test]
fn unknown_interface_is_refused() {
    let r = rig(22400, 22409);
    assert!(matches!(r.book.session(sides("v4", "nope", false)), Err(RelayError::UnknownInterface(_))));
}

#[test]
fn a_side_announcing_direction_active_is_latched_without_forced_symmetry() {
    let mut r = rig(22500, 22599);
    let (nat, callee) = (peer("127.0.0.1"), peer("127.0.0.1"));
    let mut s = r.session(sides("v4", "v4", false));
    let mut sdp = offered(&nat);
    sdp.rtp = Some("127.0.0.1:9".parse().expect("addr"));
    sdp.sends_first = true;
    let to_b = r.update(&mut s, 0, &[sdp]).adverts[0].clone().expect("relayed");
    let to_a = r.update(&mut s, 1, &[offered(&callee)]).adverts[0].clone().expect("relayed");
    nat.send_to(&rtp(1), (to_a.addr, to_a.port)).expect("send");
    assert_eq!(recv(&callee).0, rtp(1));
    callee.send_to(&rtp(2), (to_b.addr, to_b.port)).expect("send");
    assert_eq!(recv(&nat).0, rtp(2));
    r.close(&mut s);
}

#[test]
fn one_sdp_cannot_take_more_than_the_stream_cap() {
    let mut r = rig(22600, 22799);
    let caller = peer("127.0.0.1");
    let mut s = r.session(sides("v4", "v4", false));
    let many = vec![offered(&caller); DEFAULT_MAX_STREAMS + 5];
    let result = r.update(&mut s, 0, &many);
    assert_eq!(result.adverts.iter().filter(|a| a.is_some()).count(), DEFAULT_MAX_STREAMS);
    assert!(result.adverts[DEFAULT_MAX_STREAMS..].iter().all(Option::is_none));
    assert_eq!(r.book.ports_in_use(), 2 * DEFAULT_MAX_STREAMS);
    r.close(&mut s);
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
    let mut r = rig(22900, 22999);
    let mut s = r.session(sides("v4", "v4", false));
    let mut aimed = offered(&peer("127.0.0.1"));
    // 22899 + 1 = 22900: the relay's own first port.
    aimed.rtp = Some("127.0.0.1:22899".parse().expect("addr"));
    let result = r.update(&mut s, 0, &[aimed]);
    assert_eq!(result.adverts, vec![None]);
    assert_eq!(result.refused.first().map(|(_, why, _)| *why), Some("own_socket"));
}
