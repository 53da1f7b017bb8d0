//! Just enough of rtpengine's ng control protocol (bencoded dictionaries over UDP, each
//! message prefixed by a cookie) to set up calls for the media harness: `offer` with side A's
//! SDP, `answer` with side B's, `delete` at the end.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

pub(crate) struct Ng {
    sock: UdpSocket,
    next_cookie: std::cell::Cell<u64>,
}

type Error = String;

impl Ng {
    pub(crate) fn connect(to: SocketAddr) -> Result<Self, Error> {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        sock.connect(to).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        let ng = Self { sock, next_cookie: std::cell::Cell::new(1) };
        ng.call(&[("command", "ping")])?;
        Ok(ng)
    }

    /// One call per pair of streams, both sides offering the generator's sockets; returns the
    /// plan's targets in relay_load's order (stream 2k: side 0 → rtpengine's A-facing port,
    /// 2k+1: side 1 → its B-facing port).
    /// With `srtp` (an `a=crypto` value), side A offers SRTP with it and rtpengine is asked
    /// for plain RTP towards B: the SDES bridging sbcd's `--srtp` run does.
    pub(crate) fn set_up(
        &self,
        calls: usize,
        sides: [SocketAddr; 2],
        srtp: Option<&str>,
    ) -> Result<Vec<(usize, SocketAddr)>, Error> {
        let mut targets = Vec::with_capacity(calls * 2);
        for c in 0..calls {
            let call_id = format!("relay-load-{}-{calls}-{c}", std::process::id());
            let (from, to) = (format!("a{c}"), format!("b{c}"));
            let a_sdp = match srtp {
                Some(crypto) => sdp(sides[0]).replace("RTP/AVP", "RTP/SAVP") + &format!("a=crypto:{crypto}\r\n"),
                None => sdp(sides[0]),
            };
            let mut offer = vec![("command", "offer"), ("call-id", &call_id), ("from-tag", &from), ("sdp", &a_sdp)];
            if srtp.is_some() {
                offer.push(("transport-protocol", "RTP/AVP"));
            }
            let offer = self.call(&offer)?;
            let to_b = media_addr(offer.get("sdp").ok_or("offer without sdp")?)?;
            let answer = self.call(&[
                ("command", "answer"),
                ("call-id", &call_id),
                ("from-tag", &from),
                ("to-tag", &to),
                ("sdp", &sdp(sides[1])),
            ])?;
            let to_a = media_addr(answer.get("sdp").ok_or("answer without sdp")?)?;
            targets.push((0, to_a));
            targets.push((1, to_b));
        }
        Ok(targets)
    }

    pub(crate) fn tear_down(&self, calls: usize) {
        for c in 0..calls {
            let call_id = format!("relay-load-{}-{calls}-{c}", std::process::id());
            let _ = self.call(&[("command", "delete"), ("call-id", &call_id), ("from-tag", &format!("a{c}"))]);
        }
    }

    fn call(&self, dict: &[(&str, &str)]) -> Result<HashMap<String, String>, Error> {
        // rtpengine answers a cookie it has seen with its cached reply (ng retransmissions):
        // cookies must not repeat across runs, hence the process id.
        let cookie = format!("{}_{}", std::process::id(), self.next_cookie.get());
        self.next_cookie.set(self.next_cookie.get() + 1);
        let mut msg = format!("{cookie} d").into_bytes();
        for (k, v) in dict {
            msg.extend_from_slice(format!("{}:{k}{}:{v}", k.len(), v.len()).as_bytes());
        }
        msg.push(b'e');
        self.sock.send(&msg).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self.sock.recv(&mut buf).map_err(|e| format!("no answer: {e}"))?;
            let reply = &buf[..n];
            let Some(space) = reply.iter().position(|&b| b == b' ') else { continue };
            if reply[..space] != *cookie.as_bytes() {
                continue; // a late answer to an earlier message
            }
            let dict = top_level_strings(&reply[space + 1..]).ok_or("unparsable answer")?;
            return match dict.get("result").map(String::as_str) {
                Some("ok" | "pong") => Ok(dict),
                _ => Err(format!("{dict:?}")),
            };
        }
    }
}

fn sdp(at: SocketAddr) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        ip = at.ip(),
        port = at.port()
    )
}

/// The address of the first m-line (its port, the session or media c= address).
fn media_addr(sdp: &str) -> Result<SocketAddr, Error> {
    let mut ip: Option<IpAddr> = None;
    for line in sdp.lines() {
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.trim().parse().ok().or(ip);
        }
        if let Some(m) = line.strip_prefix("m=audio ") {
            let port = m.split(' ').next().and_then(|p| p.parse().ok()).ok_or("bad m= line")?;
            // rtpengine puts c= at session level; a media-level one would follow, rarely.
            return Ok(SocketAddr::new(ip.ok_or("no c= line")?, port));
        }
    }
    Err(format!("no m=audio in {sdp:?}"))
}

/// The string values of a bencoded dictionary's top level (nested values skipped).
fn top_level_strings(b: &[u8]) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut at = 1;
    if b.first() != Some(&b'd') {
        return None;
    }
    while *b.get(at)? != b'e' {
        let (key, next) = string(b, at)?;
        at = next;
        if b.get(at)?.is_ascii_digit() {
            let (value, next) = string(b, at)?;
            out.insert(key, value);
            at = next;
        } else {
            at = skip(b, at)?;
        }
    }
    Some(out)
}

fn string(b: &[u8], at: usize) -> Option<(String, usize)> {
    let colon = at + b.get(at..)?.iter().position(|&c| c == b':')?;
    let len: usize = std::str::from_utf8(&b[at..colon]).ok()?.parse().ok()?;
    let body = b.get(colon + 1..colon + 1 + len)?;
    Some((String::from_utf8_lossy(body).into_owned(), colon + 1 + len))
}

fn skip(b: &[u8], at: usize) -> Option<usize> {
    match *b.get(at)? {
        b'i' => Some(at + b.get(at..)?.iter().position(|&c| c == b'e')? + 1),
        b'l' | b'd' => {
            let mut at = at + 1;
            while *b.get(at)? != b'e' {
                at = skip(b, at)?;
            }
            Some(at + 1)
        }
        _ => string(b, at).map(|(_, next)| next),
    }
}
