use super::*;

const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 198.51.100.7\r\n\
s=Talk\r\n\
u=http://example.com/alice\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
a=tool:phone 1.0\r\n\
m=audio 49170 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
m=video 51372 RTP/AVP 96\r\n\
a=rtpmap:96 H264/90000\r\n";

fn run(rules: SdpRules<'_>) -> String {
    String::from_utf8(apply(OFFER.as_bytes(), &rules).unwrap().unwrap()).unwrap()
}

fn filter(mode: &str, list: &str) -> NameFilter {
    NameFilter::parse(mode, list).unwrap().unwrap()
}

#[test]
fn no_rules_no_change() {
    assert_eq!(apply(OFFER.as_bytes(), &SdpRules::default()), Ok(None));
    assert_eq!(
        apply(b"not sdp", &SdpRules { codecs: Some(&filter("blacklist", "pcmu")), ..Default::default() }),
        Ok(None)
    );
}

#[test]
fn codec_whitelist_removes_payloads_and_their_lines() {
    let f = filter("whitelist", "pcma,telephone-event,h264");
    let out = run(SdpRules { codecs: Some(&f), ..Default::default() });
    assert!(out.contains("m=audio 49170 RTP/AVP 8 101\r\n"), "{out}");
    assert!(!out.contains("a=rtpmap:0 "), "{out}");
    assert!(!out.contains("G729"), "{out}");
    assert!(!out.contains("annexb"), "{out}");
    // Untouched lines stay byte-exact, in order.
    assert!(out.contains("a=ptime:20\r\na=sendrecv\r\nm=video 51372 RTP/AVP 96\r\n"), "{out}");
    assert!(out.starts_with("v=0\r\no=alice 2890844526"), "{out}");
}

#[test]
fn codec_blacklist_and_static_names() {
    let f = filter("blacklist", "PCMU,g729");
    let out = run(SdpRules { codecs: Some(&f), ..Default::default() });
    assert!(out.contains("m=audio 49170 RTP/AVP 8 101\r\n"), "{out}");
}

#[test]
fn stream_with_nothing_left_is_rejected_with_port_zero() {
    let f = filter("whitelist", "pcmu,telephone-event");
    let out = run(SdpRules { codecs: Some(&f), ..Default::default() });
    assert!(out.contains("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000"), "{out}");
    assert!(out.contains("m=audio 49170 RTP/AVP 0 101\r\n"), "{out}");
}

#[test]
fn nothing_left_is_488() {
    let f = filter("whitelist", "g723,ilbc");
    assert_eq!(apply(OFFER.as_bytes(), &SdpRules { codecs: Some(&f), ..Default::default() }), Err(NothingLeft));
}

#[test]
fn media_filter_disables_streams() {
    let f = filter("blacklist", "video");
    let out = run(SdpRules { media: Some(&f), ..Default::default() });
    assert!(out.contains("m=video 0 RTP/AVP 96"), "{out}");
    let f = filter("whitelist", "image");
    assert_eq!(apply(OFFER.as_bytes(), &SdpRules { media: Some(&f), ..Default::default() }), Err(NothingLeft));
}

#[test]
fn codec_preference_is_stable() {
    let prefs = CodecPref::parse_list("g729,pcma").unwrap();
    let out = run(SdpRules { preference: &prefs, ..Default::default() });
    assert!(out.contains("m=audio 49170 RTP/AVP 18 8 0 101\r\n"), "{out}");
    let prefs = CodecPref::parse_list("/90000").unwrap();
    assert!(apply(OFFER.as_bytes(), &SdpRules { preference: &prefs, ..Default::default() }).unwrap().is_none());
    assert!(CodecPref::parse_list("pcmu/x").is_err());
}

#[test]
fn attribute_filter_keeps_protected_ones() {
    let f = filter("blacklist", "ptime,tool,rtpmap,sendrecv");
    let out = run(SdpRules { attributes: Some(&f), ..Default::default() });
    assert!(!out.contains("a=ptime"), "{out}");
    assert!(!out.contains("a=tool"), "{out}");
    assert!(out.contains("a=rtpmap:0 PCMU/8000"), "{out}");
    assert!(out.contains("a=sendrecv"), "{out}");
}

#[test]
fn anonymize() {
    let out = run(SdpRules { anonymize_as: Some("203.0.113.1"), ..Default::default() });
    assert!(out.contains("o=- 2890844526 2890844526 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4"), "{out}");
    assert!(!out.contains("u="), "{out}");
    let out = run(SdpRules { anonymize_as: Some("2001:db8::1"), ..Default::default() });
    assert!(out.contains("IN IP6 2001:db8::1"), "{out}");
}

#[test]
fn bare_lf_and_missing_final_eol_survive() {
    let body = "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nt=0 0\nm=audio 1 RTP/AVP 0 8\na=rtpmap:8 PCMA/8000";
    let f = filter("blacklist", "pcmu");
    let out = apply(body.as_bytes(), &SdpRules { codecs: Some(&f), ..Default::default() }).unwrap().unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), body.replace("RTP/AVP 0 8", "RTP/AVP 8"));
}

#[test]
fn truncated_lines_do_not_break_anything() {
    let body = "v=0\no\ns\nm=\nm=audio\na=rtpmap:\na=\n";
    let f = filter("whitelist", "pcma");
    for rules in [
        SdpRules { anonymize_as: Some("192.0.2.1"), ..Default::default() },
        SdpRules { codecs: Some(&f), media: Some(&f), attributes: Some(&f), ..Default::default() },
    ] {
        let _ = apply(body.as_bytes(), &rules);
    }
}
