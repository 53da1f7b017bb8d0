use super::*;

const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 10.0.0.1\r\n\
s=-\r\n\
c=IN IP4 10.0.0.1\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=rtcp:49181 IN IP4 10.0.0.1\r\n\
a=candidate:1 1 UDP 2130706431 10.0.0.1 49170 typ host\r\n\
a=ice-ufrag:abcd\r\n\
a=sendrecv\r\n\
m=video 0 RTP/AVP 31\r\n\
m=message 7394 TCP/MSRP *\r\n\
c=IN IP4 0.0.0.0\r\n";

#[test]
fn describes_each_m_line() {
    let d = describe(OFFER.as_bytes()).expect("sdp");
    assert_eq!(d.len(), 3);
    assert_eq!(d[0].port, 49170);
    assert_eq!(d[0].addr, Some("10.0.0.1".parse().expect("ip")));
    assert_eq!(d[0].rtcp, Some((49181, Some("10.0.0.1".parse().expect("ip")))));
    assert_eq!(d[0].telephone_event, Some(101));
    assert!(d[0].udp && !d[0].held() && !d[0].rejected());
    assert!(d[1].rejected());
    assert!(!d[2].udp);
    assert!(d[2].zero_addr && d[2].held());
}

#[test]
fn direction_and_session_level_hold() {
    let sdp = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\n";
    let d = describe(sdp.as_bytes()).expect("sdp");
    assert_eq!(d[0].direction, Direction::SendOnly);
    assert!(d[0].held());
    let sdp = sdp
        .replace("a=sendonly\r\n", "")
        .replace("m=audio 4000 RTP/AVP 0\r\n", "m=audio 4000 RTP/AVP 0\r\na=inactive\r\n");
    assert_eq!(describe(sdp.as_bytes()).expect("sdp")[0].direction, Direction::Inactive);
}

#[test]
fn anchoring_rewrites_addresses_ports_and_rtcp_and_keeps_the_rest() {
    let out = anchor(OFFER.as_bytes(), "192.0.2.10".parse().expect("ip"), &[Some(20000), None, None]).expect("sdp");
    let out = String::from_utf8(out).expect("utf8");
    let expected = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 20000 RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=rtcp:20001 IN IP4 192.0.2.10\r\n\
a=sendrecv\r\n\
m=video 0 RTP/AVP 31\r\n\
m=message 0 TCP/MSRP *\r\n\
c=IN IP4 0.0.0.0\r\n";
    assert_eq!(out, expected);
}

#[test]
fn ipv6_side_gets_ip6_lines_and_hold_stays_hold() {
    let sdp = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001\r\n";
    let out = anchor(sdp.as_bytes(), "2001:db8::5".parse().expect("ip"), &[Some(30000)]).expect("sdp");
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        "v=0\r\no=- 1 2 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 ::\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtcp:30001\r\n"
    );
}

#[test]
fn not_sdp_is_left_alone() {
    assert!(describe(b"hello").is_none());
    assert!(anchor(b"hello", "192.0.2.1".parse().expect("ip"), &[]).is_none());
}

#[test]
fn a_line_that_only_looks_like_an_m_line_does_not_shift_the_streams() {
    // Found by fuzzing: `mendonly` starts with `m` but is no m-line.
    let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\nmendonly\r\nm=video 5000 RTP/AVP 31\r\n";
    let d = describe(sdp.as_bytes()).expect("sdp");
    assert_eq!(d.len(), 2);
    let out = anchor(sdp.as_bytes(), "192.0.2.1".parse().expect("ip"), &[Some(20000), Some(20002)]).expect("sdp");
    let again = describe(&out).expect("sdp");
    assert_eq!(again.iter().map(|m| m.port).collect::<Vec<_>>(), vec![20000, 20002]);
}

#[test]
fn direction_active_means_the_sender_latches() {
    let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=direction:active\r\nm=audio 4002 RTP/AVP 0\r\n";
    let d = describe(sdp.as_bytes()).expect("sdp");
    assert!(d[0].sends_first && !d[1].sends_first);
}

#[test]
fn the_sdp_part_of_a_multipart_body_is_found() {
    let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 8\r\n";
    let body = format!(
        "--b1\r\nContent-Type: application/isup;version=itu-t92+\r\n\r\n\x01\x02\r\n--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b1--\r\n"
    );
    let r = sdp_range(body.as_bytes()).expect("found");
    assert_eq!(&body[r], sdp);
    assert_eq!(sdp_range(sdp.as_bytes()), Some(0..sdp.len()));
    assert_eq!(sdp_range(b"--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b1--\r\n"), None);
    assert_eq!(sdp_range(b"--b1\r\nContent-Type: application/sdp"), None);
    assert_eq!(sdp_range(b"garbage"), None);
}

const SRTP_OFFER: &str = "v=0\r\n\
o=alice 1 1 IN IP4 10.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
m=audio 49170 RTP/SAVP 0\r\n\
c=IN IP4 10.0.0.1\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\n\
a=CRYPTO:2 AES_CM_128_HMAC_SHA1_32 inline:BBBB|2^31\r\n\
a=sendrecv\r\n\
m=video 49180 RTP/SAVPF 96\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:CCCC";

#[test]
fn reads_the_secure_transport_and_crypto_lines() {
    let sdp = MediaSdp::parse(SRTP_OFFER.as_bytes()).expect("sdp");
    assert_eq!(sdp.origin(), Some("o=alice 1 1 IN IP4 10.0.0.1"));
    let d = sdp.streams();
    assert!(d[0].secure && d[1].secure && d[0].rtp && !d[0].rtcp_mux);
    assert_eq!(d[0].crypto, ["1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "2 AES_CM_128_HMAC_SHA1_32 inline:BBBB|2^31"]);
    assert_eq!(d[1].crypto, ["1 AES_CM_128_HMAC_SHA1_80 inline:CCCC"]);
    assert!(!describe(OFFER.as_bytes()).expect("sdp")[0].secure);
}

#[test]
fn security_rewrites_the_transport_and_replaces_crypto_lines() {
    use crate::sdp::security::StreamSecurity;
    let ours: IpAddr = "192.0.2.9".parse().expect("ip");
    let sdp = MediaSdp::parse(SRTP_OFFER.as_bytes()).expect("sdp");
    let out = sdp.anchor_secured(
        ours,
        &[Some(6000), Some(6002)],
        &[StreamSecurity::Plain, StreamSecurity::Sdes(vec!["7 AEAD_AES_128_GCM inline:DDDD".into()])],
    );
    let out = String::from_utf8(out).expect("utf8");
    assert_eq!(
        out,
        "v=0\r\n\
o=alice 1 1 IN IP4 192.0.2.9\r\n\
s=-\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
c=IN IP4 192.0.2.9\r\n\
a=sendrecv\r\n\
m=video 6002 RTP/SAVPF 96\r\n\
a=crypto:7 AEAD_AES_128_GCM inline:DDDD\r\n"
    );
    // Plain to SRTP: the lines go at the end of the section, after c=.
    let out = MediaSdp::parse(OFFER.as_bytes()).expect("sdp").anchor_secured(
        ours,
        &[Some(6000), None, None],
        &[StreamSecurity::Sdes(vec!["1 AES_CM_128_HMAC_SHA1_80 inline:EEEE".into()])],
    );
    let out = String::from_utf8(out).expect("utf8");
    assert!(out.contains("m=audio 6000 RTP/SAVP 0 8 101\r\n"), "{out}");
    assert!(out.contains("a=sendrecv\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:EEEE\r\nm=video"), "{out}");
    assert!(out.contains("m=video 0 RTP/AVP 31\r\n"), "only the m-lines named change: {out}");
    // Strip: the transport stays, the keys go.
    let out = MediaSdp::parse(SRTP_OFFER.as_bytes()).expect("sdp").anchor_secured(
        ours,
        &[None, Some(6002)],
        &[StreamSecurity::Strip, StreamSecurity::Keep],
    );
    let out = String::from_utf8(out).expect("utf8");
    assert!(out.contains("m=audio 0 RTP/SAVP 0\r\nc=IN IP4 192.0.2.9\r\na=sendrecv\r\nm=video"), "{out}");
    assert!(out.contains("inline:CCCC"), "a kept section keeps its line: {out}");
    // Keep: byte for byte what anchoring alone writes.
    let kept = MediaSdp::parse(SRTP_OFFER.as_bytes()).expect("sdp").anchor_secured(ours, &[Some(1), Some(3)], &[]);
    assert_eq!(kept, MediaSdp::parse(SRTP_OFFER.as_bytes()).expect("sdp").anchor(ours, &[Some(1), Some(3)]));
}

#[test]
fn each_streams_codec_is_its_first_format() {
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 96 0\r\na=rtpmap:96 opus/48000/2\r\nm=audio 4002 RTP/AVP 8\r\nm=video 0 RTP/AVP 31\r\nm=image 4004 udptl t38\r\n";
    assert_eq!(stream_codecs(sdp.as_bytes()), ["opus/48000", "PCMA/8000", "t38"]);
    assert!(stream_codecs(b"not sdp").is_empty());
}
