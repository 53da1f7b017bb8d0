//! RFC 4475: every torture message sent to a running sbcd over UDP and over TCP, the SBC's
//! answer checked against the verdict of the message's RFC section. Valid requests must come
//! out at the next hop (a local sink); invalid ones get the status the RFC names; invalid
//! responses and unframeable junk are dropped. sbcd must still answer afterwards.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sbc_core::sip::msg::{salvage_request_rows, split_values, HeaderName, Message, Via};
use sbc_e2e::{config_file, corpus, Sbcd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Answered with this status.
    Reply(u16),
    /// Forwarded to the next hop.
    Relayed,
    /// No answer (invalid response, stray response, unframeable).
    Silent,
}

use Expect::*;

/// (file, RFC 4475 section, verdict over UDP, verdict over TCP).
const TABLE: &[(&str, &str, Expect, Expect)] = &[
    // Valid syntax, but its To tag names a dialog that does not exist here (RFC 3261 §12.2.2).
    ("wsinv", "3.1.1.1", Reply(481), Reply(481)),
    ("intmeth", "3.1.1.2", Relayed, Relayed),
    ("esc01", "3.1.1.3", Relayed, Relayed),
    ("escnull", "3.1.1.4", Relayed, Relayed),
    ("esc02", "3.1.1.5", Relayed, Relayed),
    ("lwsdisp", "3.1.1.6", Relayed, Relayed),
    ("longreq", "3.1.1.7", Relayed, Relayed),
    ("dblreq", "3.1.1.8", Relayed, Relayed),
    ("semiuri", "3.1.1.9", Relayed, Relayed),
    ("transports", "3.1.1.10", Relayed, Relayed),
    ("mpart01", "3.1.1.11", Relayed, Relayed),
    ("unreason", "3.1.1.12", Silent, Silent),
    ("noreason", "3.1.1.13", Silent, Silent),
    ("badinv01", "3.1.2.1", Reply(400), Reply(400)),
    // Over TCP a Content-Length beyond the data means "more is coming" (RFC 3261 §18.3).
    ("clerr", "3.1.2.2", Reply(400), Silent),
    ("ncl", "3.1.2.3", Reply(400), Reply(400)),
    ("scalar02", "3.1.2.4", Reply(400), Reply(400)),
    ("scalarlg", "3.1.2.5", Silent, Silent),
    ("quotbal", "3.1.2.6", Reply(400), Reply(400)),
    ("ltgtruri", "3.1.2.7", Reply(400), Reply(400)),
    ("lwsruri", "3.1.2.8", Reply(400), Reply(400)),
    ("lwsstart", "3.1.2.9", Reply(400), Reply(400)),
    ("trws", "3.1.2.10", Reply(400), Reply(400)),
    ("escruri", "3.1.2.11", Reply(400), Reply(400)),
    ("baddate", "3.1.2.12", Reply(400), Reply(400)),
    ("regbadct", "3.1.2.13", Reply(400), Reply(400)),
    ("badaspec", "3.1.2.14", Reply(400), Reply(400)),
    // The corpus file has no empty line after its headers: a datagram is complete anyway (400),
    // on a stream more bytes may still come, so nothing is answered until they do.
    ("baddn", "3.1.2.15", Reply(400), Silent),
    ("badvers", "3.1.2.16", Reply(505), Reply(505)),
    ("mismatch01", "3.1.2.17", Reply(400), Reply(400)),
    ("mismatch02", "3.1.2.18", Reply(400), Reply(400)),
    ("bigcode", "3.1.2.19", Silent, Silent),
    ("badbranch", "3.2.1", Relayed, Relayed),
    ("insuf", "3.3.1", Reply(400), Reply(400)),
    ("unkscm", "3.3.2", Reply(416), Reply(416)),
    ("novelsc", "3.3.3", Reply(416), Reply(416)),
    ("unksm2", "3.3.4", Relayed, Relayed),
    ("bext01", "3.3.5", Reply(420), Reply(420)),
    ("invut", "3.3.6", Reply(415), Reply(415)),
    ("regaut01", "3.3.7", Relayed, Relayed),
    ("multi01", "3.3.8", Reply(400), Reply(400)),
    ("mcl01", "3.3.9", Reply(400), Reply(400)),
    ("bcast", "3.3.10", Silent, Silent),
    ("zeromf", "3.3.11", Reply(483), Reply(483)),
    ("cparam01", "3.3.12", Relayed, Relayed),
    ("cparam02", "3.3.13", Relayed, Relayed),
    ("regescrt", "3.3.14", Relayed, Relayed),
    ("sdp01", "3.3.15", Relayed, Relayed),
    // RFC 2543 syntax is accepted; on a stream it lacks the mandatory Content-Length.
    ("inv2543", "3.4.1", Relayed, Reply(400)),
    ("test", "-", Silent, Silent),
];

struct Rig {
    sbcd: Sbcd,
    sink: UdpSocket,
    seen_at_sink: std::collections::HashSet<Vec<u8>>,
}

impl Rig {
    fn new() -> Self {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cfg = config_file(
            "torture",
            &format!(
                "interfaces:\n  - name: default\n    listen: []\nrouting:\n  next_hop: udp:{}\n",
                sink.local_addr().unwrap()
            ),
        );
        let sbcd = Sbcd::start(&["--config", cfg.to_str().unwrap()]);
        sink.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Self { sbcd, sink, seen_at_sink: Default::default() }
    }

    /// A new request at the sink (retransmissions of earlier ones are skipped).
    fn sink_request(&mut self, within: Duration) -> Option<Message> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            let Ok((n, from)) = self.sink.recv_from(&mut buf) else {
                continue;
            };
            let Ok(m) = Message::parse(Bytes::copy_from_slice(&buf[..n])) else {
                continue;
            };
            let key = m.call_id().unwrap_or_default().to_vec();
            if m.is_request() && m.method_bytes() != b"ACK" && self.seen_at_sink.insert(key) {
                // Answer non-INVITEs so sbcd's client transactions finish quickly.
                if m.method_bytes() != b"INVITE" {
                    let _ = self.sink.send_to(&ok_for(&m), from);
                }
                return Some(m);
            }
        }
        None
    }
}

fn ok_for(req: &Message) -> Vec<u8> {
    let mut s = b"SIP/2.0 200 OK\r\n".to_vec();
    for name in [HeaderName::Via, HeaderName::From, HeaderName::To, HeaderName::CallId, HeaderName::CSeq] {
        for h in req.headers_named(name) {
            s.extend_from_slice(req.line(h));
        }
    }
    s.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    s
}

/// Where sbcd will answer a datagram: the top Via's port (or 5060) unless it asks for rport.
fn reply_port(buf: &[u8]) -> u16 {
    if let Ok(m) = Message::parse(Bytes::copy_from_slice(buf)) {
        if let Some(v) = m.top_via() {
            return if v.has_param(b"rport") { 0 } else { v.port.unwrap_or(5060) };
        }
    }
    let via =
        salvage_request_rows(buf).and_then(|rows| rows.into_iter().find(|(n, _)| *n == HeaderName::Via)).and_then(
            |(_, v)| split_values(v).next().and_then(Via::parse_any_version).map(|v| (v.port, v.has_param(b"rport"))),
        );
    match via {
        Some((_, true)) | None => 0,
        Some((port, false)) => port.unwrap_or(5060),
    }
}

fn statuses(data: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(8).position(|w| w == b"SIP/2.0 ") {
        let code = &rest[i + 8..];
        if code.len() >= 3 && code[..3].iter().all(u8::is_ascii_digit) && (i == 0 || rest[i - 1] == b'\n') {
            out.push(std::str::from_utf8(&code[..3]).unwrap().parse().unwrap());
        }
        rest = &rest[i + 8..];
    }
    out
}

fn check(rig: &mut Rig, name: &str, section: &str, want: Expect, got_replies: Vec<u16>) -> Option<String> {
    let finals: Vec<u16> = got_replies.iter().copied().filter(|c| *c >= 200).collect();
    let ok = match want {
        Reply(code) => finals.first() == Some(&code),
        Relayed => finals.iter().all(|c| *c < 300) && rig.sink_request(Duration::from_secs(10)).is_some(),
        Silent => got_replies.is_empty(),
    };
    (!ok).then(|| format!("{name} (§{section}): want {want:?}, got replies {got_replies:?}"))
}

#[test]
fn rfc4475_over_udp() {
    let mut rig = Rig::new();
    let mut wrong = Vec::new();
    for (i, (name, section, want, _)) in TABLE.iter().enumerate() {
        let data = corpus(name);
        // A loopback address of its own per message, bound on the port sbcd will answer to.
        let ip = [127, 0, 77, (i + 1) as u8];
        let port = reply_port(&data);
        let sock = UdpSocket::bind(SocketAddr::from((ip, port))).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        sock.send_to(&data, rig.sbcd.addr()).unwrap();
        // Relayed requests are checked at the sink; only an immediate refusal is looked for here.
        let wait = match want {
            Silent => Duration::from_millis(300),
            Relayed => Duration::from_millis(100),
            Reply(_) => Duration::from_secs(5),
        };
        let deadline = Instant::now() + wait;
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                replies.extend(statuses(&buf[..n]));
                if replies.iter().any(|c| *c >= 200) || (*want == Relayed && !replies.is_empty()) {
                    break;
                }
            }
        }
        if let Some(w) = check(&mut rig, name, section, *want, replies) {
            wrong.push(w);
        }
    }
    assert!(rig.sbcd.is_running(), "sbcd died; log:\n{}", rig.sbcd.log_text());
    assert!(wrong.is_empty(), "wrong verdicts over UDP:\n{}\nsbcd log:\n{}", wrong.join("\n"), rig.sbcd.log_text());
}

#[test]
fn rfc4475_over_tcp() {
    let mut rig = Rig::new();
    let mut wrong = Vec::new();
    for (name, section, _, want) in TABLE {
        let data = corpus(name);
        let mut conn = TcpStream::connect(rig.sbcd.addr()).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        conn.write_all(&data).unwrap();
        // Relayed requests are checked at the sink; only an immediate refusal is looked for here.
        let wait = match want {
            Silent => Duration::from_millis(300),
            Relayed => Duration::from_millis(100),
            Reply(_) => Duration::from_secs(5),
        };
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    let st = statuses(&got);
                    if st.iter().any(|c| *c >= 200) || (*want == Relayed && !st.is_empty()) {
                        break;
                    }
                }
                Err(_) => {}
            }
        }
        if let Some(w) = check(&mut rig, name, section, *want, statuses(&got)) {
            wrong.push(w);
        }
    }
    assert!(rig.sbcd.is_running(), "sbcd died; log:\n{}", rig.sbcd.log_text());
    assert!(wrong.is_empty(), "wrong verdicts over TCP:\n{}\nsbcd log:\n{}", wrong.join("\n"), rig.sbcd.log_text());
}
