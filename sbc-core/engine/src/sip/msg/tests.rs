//! The RFC 4475 gate: every torture message gets the verdict its RFC section demands, and every
//! accepted message is indexed losslessly.

use bytes::Bytes;

use super::*;

/// What the message layer must conclude for one corpus file.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A request the B2BUA may process (some get an application reply later, e.g. 483, 415).
    Accept,
    /// A valid response.
    AcceptResponse,
    /// A request answered with this status by the message layer.
    Reject(u16),
    /// An invalid response or unframeable junk: dropped and counted.
    Drop,
}

use Verdict::*;

fn expected() -> Vec<(&'static str, &'static str, Verdict)> {
    vec![
        ("wsinv", "3.1.1.1", Accept),
        ("intmeth", "3.1.1.2", Accept),
        ("esc01", "3.1.1.3", Accept),
        ("escnull", "3.1.1.4", Accept),
        ("esc02", "3.1.1.5", Accept),
        ("lwsdisp", "3.1.1.6", Accept),
        ("longreq", "3.1.1.7", Accept),
        ("dblreq", "3.1.1.8", Accept),
        ("semiuri", "3.1.1.9", Accept),
        ("transports", "3.1.1.10", Accept),
        ("mpart01", "3.1.1.11", Accept),
        ("unreason", "3.1.1.12", AcceptResponse),
        ("noreason", "3.1.1.13", AcceptResponse),
        ("badinv01", "3.1.2.1", Reject(400)),
        ("clerr", "3.1.2.2", Reject(400)),
        ("ncl", "3.1.2.3", Reject(400)),
        ("scalar02", "3.1.2.4", Reject(400)),
        ("scalarlg", "3.1.2.5", Drop),
        ("quotbal", "3.1.2.6", Reject(400)),
        ("ltgtruri", "3.1.2.7", Reject(400)),
        ("lwsruri", "3.1.2.8", Reject(400)),
        ("lwsstart", "3.1.2.9", Reject(400)),
        ("trws", "3.1.2.10", Reject(400)),
        ("escruri", "3.1.2.11", Reject(400)),
        ("baddate", "3.1.2.12", Reject(400)),
        ("regbadct", "3.1.2.13", Reject(400)),
        ("badaspec", "3.1.2.14", Reject(400)),
        ("baddn", "3.1.2.15", Reject(400)),
        ("badvers", "3.1.2.16", Reject(505)),
        ("mismatch01", "3.1.2.17", Reject(400)),
        ("mismatch02", "3.1.2.18", Reject(400)),
        ("bigcode", "3.1.2.19", Drop),
        ("badbranch", "3.2.1", Accept),
        ("insuf", "3.3.1", Reject(400)),
        ("unkscm", "3.3.2", Reject(416)),
        ("novelsc", "3.3.3", Reject(416)),
        ("unksm2", "3.3.4", Accept),
        ("bext01", "3.3.5", Reject(420)),
        ("invut", "3.3.6", Accept),
        ("regaut01", "3.3.7", Accept),
        ("multi01", "3.3.8", Reject(400)),
        ("mcl01", "3.3.9", Reject(400)),
        ("bcast", "3.3.10", AcceptResponse),
        ("zeromf", "3.3.11", Accept),
        ("cparam01", "3.3.12", Accept),
        ("cparam02", "3.3.13", Accept),
        ("regescrt", "3.3.14", Accept),
        ("sdp01", "3.3.15", Accept),
        ("inv2543", "3.4.1", Accept),
        // Not in the RFC: no version in the request line and no Via, so there is no one to answer.
        ("test", "-", Drop),
    ]
}

#[allow(clippy::disallowed_methods)] // the test reads the committed corpus
pub(crate) fn corpus_file(name: &str) -> Bytes {
    let path = format!("{}/../../tests/corpus/rfc4475/{name}.dat", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn verdict(buf: Bytes) -> Verdict {
    match Message::parse(buf.clone()) {
        Ok(m) if m.is_request() => match check_request(&m) {
            Ok(()) => Accept,
            Err(r) => Reject(r.code),
        },
        Ok(m) => match check_response(&m) {
            Ok(()) => AcceptResponse,
            Err(_) => Drop,
        },
        Err(e) => {
            if salvage_request_rows(&buf).is_some() {
                Reject(e.status())
            } else {
                Drop
            }
        }
    }
}

#[test]
fn rfc4475_verdicts() {
    let mut wrong = Vec::new();
    let list = expected();
    assert_eq!(list.len(), 50);
    for (name, section, want) in list {
        let got = verdict(corpus_file(name));
        if got != want {
            wrong.push(format!("{name} (§{section}): want {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}

/// Start line + every row + empty line + body reproduces the datagram byte for byte.
#[test]
fn accepted_messages_are_indexed_losslessly() {
    for (name, _, want) in expected() {
        if !matches!(want, Accept | AcceptResponse) {
            continue;
        }
        let buf = corpus_file(name);
        let m = Message::parse(buf.clone()).expect(name);
        let first_row = m.headers()[0].line.start as usize;
        let mut rebuilt = buf[..first_row].to_vec();
        for h in m.headers() {
            rebuilt.extend_from_slice(m.line(h));
        }
        let body_start = m.headers().last().expect(name).line.end as usize;
        rebuilt.extend_from_slice(&buf[body_start..m.body.start as usize]);
        rebuilt.extend_from_slice(m.body());
        let expect_len = if name == "dblreq" { rebuilt.len() } else { buf.len() };
        assert_eq!(&rebuilt[..], &buf[..expect_len], "{name}");
    }
}

#[test]
fn typed_views_of_the_tortuous_invite() {
    let m = Message::parse(corpus_file("wsinv")).unwrap();
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(m.call_id(), Some(&b"wsinv.ndaksdj@192.0.2.1"[..]));
    assert_eq!(m.cseq(), Some(CSeq { num: 9, method: Method::Invite }));
    assert_eq!(m.max_forwards(), Some(Ok(68)));
    assert_eq!(m.from_tag(), Some(&b"98asjd8"[..]));
    assert_eq!(m.to_tag(), Some(&b"1918181833n"[..]));
    let branches: Vec<_> = m.values(HeaderName::Via).filter_map(Via::parse).filter_map(|v| v.branch()).collect();
    assert_eq!(branches, vec![&b"390skdjuw"[..], b"z9hG4bK9ikj8", b"z9hG4bK30239"]);
    assert_eq!(m.body().len(), 150);
    assert_eq!(m.contact().unwrap().uri, b"sip:jdrosen@example.com");
}

#[test]
fn dblreq_keeps_only_the_first_message() {
    let m = Message::parse(corpus_file("dblreq")).unwrap();
    assert!(m.body().is_empty());
    assert_eq!(m.call_id(), Some(&b"dblreq.0ha0isndaksdj99sdfafnl3lk233412"[..]));
}

#[test]
fn unusual_reason_phrases_are_kept() {
    let m = Message::parse(corpus_file("unreason")).unwrap();
    assert!(m.reason().starts_with(b"= 2**3 * 5**2"));
    let m = Message::parse(corpus_file("noreason")).unwrap();
    assert_eq!(m.status(), Some(100));
    assert!(m.reason().is_empty());
}

#[test]
fn stream_framing() {
    let inv = corpus_file("sdp01");
    let mut two = inv.to_vec();
    two.extend_from_slice(&inv);
    match frame_stream(&two).unwrap() {
        StreamFrame::Message { len } => assert_eq!(len, inv.len()),
        other => panic!("{other:?}"),
    }
    assert_eq!(frame_stream(&inv[..inv.len() - 3]).unwrap(), StreamFrame::Incomplete);
    assert_eq!(frame_stream(b"\r\n\r\n").unwrap(), StreamFrame::KeepAlive { len: 4, ping: true });
    assert_eq!(frame_stream(b"\r\n").unwrap(), StreamFrame::Incomplete);
    assert!(frame_stream(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n").is_err());
    let huge = vec![b'a'; MAX_HEADER_BYTES + 10];
    assert!(frame_stream(&huge).is_err());
}

/// Fed a stream in pieces of every size, the incremental framer finds the same messages as
/// framing the whole buffer at once, and a header block trickled a byte at a time is searched
/// once, not once per byte.
#[test]
fn incremental_framing_matches_one_shot_framing() {
    let inv = corpus_file("sdp01");
    let mut stream = b"\r\n\r\n".to_vec();
    stream.extend_from_slice(&inv);
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(&inv);
    for piece in [1, 2, 3, 7, 64, 1000] {
        let (mut framer, mut buf, mut frames) = (StreamFramer::default(), Vec::new(), Vec::new());
        for chunk in stream.chunks(piece) {
            buf.extend_from_slice(chunk);
            loop {
                match framer.next(&buf).expect("frames") {
                    StreamFrame::Message { len } => {
                        frames.push(buf.drain(..len).collect::<Vec<u8>>());
                    }
                    StreamFrame::KeepAlive { len, .. } => {
                        buf.drain(..len);
                    }
                    StreamFrame::Incomplete => break,
                }
            }
        }
        assert_eq!(frames, vec![inv.to_vec(), inv.to_vec()], "pieces of {piece}");
        assert!(buf.is_empty());
    }
    // A header block that never ends is refused once it passes the limit, trickled or not.
    let mut framer = StreamFramer::default();
    let mut buf = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    let mut refused = false;
    for _ in 0..MAX_HEADER_BYTES {
        buf.extend_from_slice(b"X");
        if framer.next(&buf).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused);
}

#[test]
fn garbage_never_panics() {
    // A cheap deterministic sweep; the cargo-fuzz targets do the real search.
    let seed = corpus_file("wsinv");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut b = seed.to_vec();
        let n = (x % 8) as usize + 1;
        for k in 0..n {
            let i = ((x >> (k * 7)) as usize) % b.len();
            b[i] = (x >> (k * 5)) as u8;
        }
        b.truncate(((x >> 40) as usize) % (b.len() + 1));
        let buf = Bytes::from(b);
        let _ = verdict(buf.clone());
        let _ = frame_stream(&buf);
        if let Ok(m) = Message::parse(buf) {
            let _ = (m.top_via(), m.cseq(), m.contact(), m.from_hdr(), m.to_hdr(), m.max_forwards());
            let _ = m.request_uri().len();
            let _ = Uri::parse(m.request_uri());
        }
    }
}
