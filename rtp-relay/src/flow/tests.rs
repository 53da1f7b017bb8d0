use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

const LIMITS: FlowLimits = FlowLimits { latch_window_ms: 2000, max_packet_rate: 0 };

const PKT: [u8; 12] = [0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];

fn spec(a: Option<&str>, b: Option<&str>, sym_a: bool, sym_b: bool) -> StreamSpec {
    let remote = |x: Option<&str>, symmetric| RemoteSpec {
        addr: [x.map(addr), x.map(|x| SocketAddr::new(addr(x).ip(), addr(x).port() + 1))],
        symmetric,
        drop_payload_type: None,
        signalling: None,
        crypto: Default::default(),
    };
    StreamSpec { remotes: [remote(a, sym_a), remote(b, sym_b)] }
}

#[test]
fn plain_relay_sends_to_the_other_sides_sdp_address_and_takes_only_that_sides_hosts() {
    let mut f = StreamFlows::new(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), false, false), LIMITS, 0);
    // Another port of the SDP's host is the same side (a UA that does not send symmetrically).
    let out = f.on_packet(0, RTP, addr("10.0.0.1:1234"), &PKT, 10);
    assert_eq!(out.verdict, Verdict::Forward(addr("10.0.0.2:6000")));
    let out = f.on_packet(1, RTCP, addr("10.0.0.2:6001"), &PKT, 10);
    assert_eq!(out.verdict, Verdict::Forward(addr("10.0.0.1:4001")));
    // A third host's packets reach no one (a port sweep injecting audio).
    let out = f.on_packet(0, RTP, addr("192.0.2.9:1234"), &PKT, 10);
    assert_eq!(out.verdict, Verdict::Drop(DropReason::ForeignSource));
    // The host its signalling comes from is that side's too.
    let mut s = spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), false, false);
    s.remotes[0].signalling = Some("198.51.100.7".parse().expect("ip"));
    let mut f = StreamFlows::new(s, LIMITS, 0);
    let out = f.on_packet(0, RTP, addr("198.51.100.7:30000"), &PKT, 10);
    assert_eq!(out.verdict, Verdict::Forward(addr("10.0.0.2:6000")));
}

#[test]
fn unknown_other_side_is_a_counted_drop() {
    let mut f = StreamFlows::new(spec(Some("10.0.0.1:4000"), None, false, false), LIMITS, 0);
    let out = f.on_packet(0, RTP, addr("10.0.0.1:4000"), &PKT, 10);
    assert_eq!(out.verdict, Verdict::Drop(DropReason::NoDestination));
}

#[test]
fn symmetric_side_gets_packets_where_it_sends_from() {
    // A is behind NAT: its SDP says 10.0.0.1:4000 but it sends from 198.51.100.7:30000.
    let mut f = StreamFlows::new(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), true, false), LIMITS, 0);
    let out = f.on_packet(0, RTP, addr("198.51.100.7:30000"), &PKT, 5);
    assert!(out.latched);
    let back = f.on_packet(1, RTP, addr("10.0.0.2:6000"), &PKT, 6);
    assert_eq!(back.verdict, Verdict::Forward(addr("198.51.100.7:30000")));
}

#[test]
fn a_stranger_cannot_take_over_a_latched_stream_after_the_window() {
    let mut f = StreamFlows::new(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), true, false), LIMITS, 0);
    f.on_packet(0, RTP, addr("198.51.100.7:30000"), &PKT, 5);
    let attack = f.on_packet(0, RTP, addr("203.0.113.66:9999"), &PKT, 10_000);
    assert_eq!(attack.verdict, Verdict::Drop(DropReason::ForeignSource));
    assert_eq!(f.target(0, RTP), Some(addr("198.51.100.7:30000")));
    // Inside the window a new source is learned (NAT rebinding early in the call).
    let mut g = StreamFlows::new(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), true, false), LIMITS, 0);
    g.on_packet(0, RTP, addr("198.51.100.7:30000"), &PKT, 5);
    let moved = g.on_packet(0, RTP, addr("198.51.100.7:30002"), &PKT, 500);
    assert!(moved.latched);
    assert_eq!(g.target(0, RTP), Some(addr("198.51.100.7:30002")));
}

#[test]
fn the_sdp_address_may_always_relatch_and_a_new_offer_reopens_the_window() {
    let mut f = StreamFlows::new(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), true, false), LIMITS, 0);
    f.on_packet(0, RTP, addr("198.51.100.7:30000"), &PKT, 5);
    let from_sdp = f.on_packet(0, RTP, addr("10.0.0.1:4000"), &PKT, 60_000);
    assert!(from_sdp.latched);
    assert_eq!(f.target(0, RTP), Some(addr("10.0.0.1:4000")));
    f.update(spec(Some("10.0.0.1:4100"), Some("10.0.0.2:6000"), true, false), 70_000);
    let relearn = f.on_packet(0, RTP, addr("10.0.0.1:4102"), &PKT, 70_500);
    assert!(relearn.latched, "the new offer's host, another port, in the new window");
    assert_eq!(f.target(0, RTP), Some(addr("10.0.0.1:4102")));
    // A stranger cannot take a latch on the side's own host, window or not.
    let stranger = f.on_packet(0, RTP, addr("198.51.100.7:31000"), &PKT, 70_600);
    assert_eq!(stranger.verdict, Verdict::Drop(DropReason::ForeignSource));
}

/// PKT with another SSRC.
const OTHER_SSRC: [u8; 12] = [0x80, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9];

#[test]
fn latching_prefers_the_signalling_host_and_a_stranger_cannot_start_a_new_ssrc() {
    let mut s = spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), true, false);
    s.remotes[0].signalling = Some("198.51.100.7".parse().expect("ip"));
    // A stranger's packet came first and latched: the phone's own packet takes over, even
    // after the window.
    let mut f = StreamFlows::new(s, LIMITS, 0);
    f.on_packet(0, RTP, addr("203.0.113.66:9999"), &PKT, 5);
    let phone = f.on_packet(0, RTP, addr("198.51.100.7:30000"), &PKT, 10_000);
    assert!(phone.latched);
    assert_eq!(f.target(0, RTP), Some(addr("198.51.100.7:30000")));
    // Nobody else moves it now, in a new window either.
    f.update(s, 20_000);
    let again = f.on_packet(0, RTP, addr("203.0.113.66:9999"), &PKT, 20_100);
    assert_eq!(again.verdict, Verdict::Drop(DropReason::ForeignSource));
    // Without a preferred latch, a NAT rebinding (same SSRC, new port) moves within the window;
    // a new SSRC from a new address does not.
    let mut g = StreamFlows::new(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), true, false), LIMITS, 0);
    g.on_packet(0, RTP, addr("192.0.2.5:30000"), &PKT, 5);
    let other = g.on_packet(0, RTP, addr("192.0.2.99:7000"), &OTHER_SSRC, 100);
    assert_eq!(other.verdict, Verdict::Drop(DropReason::ForeignSource));
    let rebound = g.on_packet(0, RTP, addr("192.0.2.5:30002"), &PKT, 200);
    assert!(rebound.latched);
    // The latched address itself may change its SSRC (a new RTP session of the same phone).
    let renewed = g.on_packet(0, RTP, addr("192.0.2.5:30002"), &OTHER_SSRC, 300);
    assert!(matches!(renewed.verdict, Verdict::Forward(_)));
}

#[test]
fn each_endpoint_is_policed_to_its_packet_rate() {
    let limits = FlowLimits { latch_window_ms: 2000, max_packet_rate: 50 };
    let mut f = StreamFlows::new(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), false, false), limits, 0);
    let sent = |f: &mut StreamFlows, n: u32, at: u64| {
        (0..n)
            .filter(|_| matches!(f.on_packet(0, RTP, addr("10.0.0.1:4000"), &PKT, at).verdict, Verdict::Forward(_)))
            .count()
    };
    assert_eq!(sent(&mut f, 80, 10), 50, "one second's worth at once");
    assert_eq!(sent(&mut f, 80, 510), 25, "then the rate");
    let out = f.on_packet(0, RTP, addr("10.0.0.1:4000"), &PKT, 510);
    assert_eq!(out.verdict, Verdict::Drop(DropReason::RateLimited));
    // The other side is not charged for it, and a stranger's flood spends nothing of it.
    assert!(matches!(f.on_packet(1, RTP, addr("10.0.0.2:6000"), &PKT, 510).verdict, Verdict::Forward(_)));
    for _ in 0..1000 {
        f.on_packet(0, RTP, addr("203.0.113.66:9999"), &PKT, 2000);
    }
    assert_eq!(sent(&mut f, 10, 2000), 10, "the real peer's packets still go");
}

#[test]
fn a_phone_whose_nat_moves_late_in_the_call_keeps_its_audio() {
    let mut s = spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), true, false);
    s.remotes[0].signalling = Some("198.51.100.7".parse().expect("ip"));
    let mut f = StreamFlows::new(s, LIMITS, 0);
    f.on_packet(0, RTP, addr("198.51.100.7:30000"), &PKT, 5);
    // Minutes later its NAT binding moves: same host, same SSRC, another port.
    let moved = f.on_packet(0, RTP, addr("198.51.100.7:41000"), &PKT, 300_000);
    assert!(moved.latched);
    assert_eq!(f.target(0, RTP), Some(addr("198.51.100.7:41000")));
}

#[test]
fn a_new_answer_retargets_a_non_symmetric_side() {
    let mut f = StreamFlows::new(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), false, false), LIMITS, 0);
    f.update(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:7000"), false, false), 100);
    let out = f.on_packet(0, RTP, addr("10.0.0.1:4000"), &PKT, 200);
    assert_eq!(out.verdict, Verdict::Forward(addr("10.0.0.2:7000")));
}

#[test]
fn dtmf_filtering_drops_only_event_packets() {
    let mut s = spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), false, false);
    s.remotes[0].drop_payload_type = Some(101);
    let mut f = StreamFlows::new(s, LIMITS, 0);
    let mut event = PKT;
    event[1] = 0x80 | 101; // marker bit set
    assert_eq!(f.on_packet(0, RTP, addr("10.0.0.1:4000"), &event, 1).verdict, Verdict::Drop(DropReason::DtmfFiltered));
    assert!(matches!(f.on_packet(0, RTP, addr("10.0.0.1:4000"), &PKT, 1).verdict, Verdict::Forward(_)));
    // The other direction is not filtered.
    assert!(matches!(f.on_packet(1, RTP, addr("10.0.0.2:6000"), &event, 1).verdict, Verdict::Forward(_)));
}

#[test]
fn runts_are_dropped() {
    let mut f = StreamFlows::new(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), false, false), LIMITS, 0);
    assert_eq!(f.on_packet(0, RTP, addr("10.0.0.1:4000"), &[0x80], 1).verdict, Verdict::Drop(DropReason::Malformed));
}

#[test]
fn a_source_latched_before_the_answer_does_not_keep_the_stream() {
    // Ringing: only A's offer is known; a stranger sprays A's port and latches it.
    let mut f = StreamFlows::new(spec(Some("10.0.0.1:4000"), None, true, false), LIMITS, 0);
    f.on_packet(0, RTP, addr("203.0.113.66:9999"), &PKT, 100);
    // The answer arrives 30 s later and re-opens both sides' windows: the real caller, behind
    // NAT, takes the stream back when it starts sending.
    f.update(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), true, false), 30_000);
    let real = f.on_packet(0, RTP, addr("198.51.100.7:30000"), &PKT, 30_500);
    assert!(real.latched);
    assert_eq!(f.target(0, RTP), Some(addr("198.51.100.7:30000")));
}

#[test]
fn rtcp_to_a_natted_side_follows_its_latched_rtp_until_it_sends_rtcp() {
    let mut f = StreamFlows::new(spec(Some("10.0.0.1:4000"), Some("10.0.0.2:6000"), true, false), LIMITS, 0);
    f.on_packet(0, RTP, addr("198.51.100.7:30000"), &PKT, 5);
    assert_eq!(f.target(0, RTCP), Some(addr("198.51.100.7:30001")));
    f.on_packet(0, RTCP, addr("198.51.100.7:30555"), &PKT, 6);
    assert_eq!(f.target(0, RTCP), Some(addr("198.51.100.7:30555")));
}
