//! A minimal SIP user agent over UDP for tests that must act between signalling steps (send
//! RTP after the answer, re-INVITE to a new port). One call at a time; loopback only, so no
//! retransmissions are needed.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A received SIP message, as text.
#[derive(Debug, Clone)]
pub struct SipText(pub String);

impl SipText {
    pub fn status(&self) -> Option<u16> {
        let first = self.0.lines().next()?;
        first.strip_prefix("SIP/2.0 ")?.split_whitespace().next()?.parse().ok()
    }
    pub fn method(&self) -> Option<&str> {
        let first = self.0.lines().next()?;
        (!first.starts_with("SIP/2.0")).then(|| first.split_whitespace().next()).flatten()
    }
    /// The `tag` parameter of header `name` (From or To); empty without one.
    pub fn tag(&self, name: &str) -> String {
        let value = self.header(name).unwrap_or_default();
        value.split("tag=").nth(1).unwrap_or_default().split(';').next().unwrap_or_default().trim().to_string()
    }

    /// The first header named `name` (case-insensitive), value trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0.split("\r\n").take_while(|l| !l.is_empty()).skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    pub fn body(&self) -> &str {
        self.0.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
    /// `c=` address and `m=audio` port of the SDP body.
    pub fn sdp_media(&self) -> Option<(String, u16)> {
        let body = self.body();
        let c = body.lines().find_map(|l| l.strip_prefix("c=IN IP4 ").or_else(|| l.strip_prefix("c=IN IP6 ")))?;
        let m = body.lines().find_map(|l| l.strip_prefix("m=audio "))?;
        Some((c.trim().to_string(), m.split_whitespace().next()?.parse().ok()?))
    }
}

pub fn sdp(ip: &str, port: u16, extra: &str) -> String {
    format!("v=0\r\no=ua 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n{extra}")
}

pub struct TestUa {
    sock: UdpSocket,
    pub local: SocketAddr,
    sbc: SocketAddr,
    pub call_id: String,
    from_tag: String,
    cseq: u32,
    to: Option<String>,
    /// The SBC's Contact from the 2xx: Request-URI of in-dialog requests.
    target: Option<String>,
    branch: u32,
    /// Header lines (each ending in CRLF) added to every request.
    pub extra_headers: String,
    /// The Contact URI it sends (default: its own address); a private one plays a NAT-ed UA.
    pub contact: Option<String>,
}

impl TestUa {
    pub fn new(sbc: SocketAddr) -> Self {
        Self::new_on("127.0.0.1", sbc)
    }

    /// A UA on another loopback address (sources matter to profiles and to what must not
    /// leak across the SBC).
    pub fn new_on(ip: &str, sbc: SocketAddr) -> Self {
        let sock = UdpSocket::bind((ip, 0)).expect("bind ua");
        let local = sock.local_addr().expect("ua addr");
        let call_id = format!("ua-{}-{}@test", std::process::id(), local.port());
        Self {
            sock,
            local,
            sbc,
            call_id,
            from_tag: format!("t{}", local.port()),
            cseq: 0,
            to: None,
            target: None,
            branch: 0,
            extra_headers: String::new(),
            contact: None,
        }
    }

    /// Sends `text` to the SBC as it is (a request the UA does not build itself).
    pub fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.sbc).expect("send to sbc");
    }

    /// The tag of the From it sends.
    pub fn from_tag(&self) -> &str {
        &self.from_tag
    }

    /// The next message from the SBC within `within`.
    pub fn recv(&self, within: Duration) -> Option<SipText> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            self.sock.set_read_timeout(Some(left)).ok()?;
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                return Some(SipText(String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        }
        None
    }

    /// The next request from the SBC within `within`, skipping responses (a 2xx the SBC
    /// resends because our ACK reached it late belongs to an earlier transaction).
    pub fn recv_request(&self, within: Duration) -> Option<SipText> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.recv(deadline.saturating_duration_since(Instant::now()))?;
            if m.method().is_some() {
                return Some(m);
            }
        }
    }

    /// The next request with `method`, skipping others: an INVITE the SBC resent before our
    /// answer reached it may still be queued ahead of the ACK.
    pub fn recv_method(&self, method: &str, within: Duration) -> Option<SipText> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.recv_request(deadline.saturating_duration_since(Instant::now()))?;
            if m.method() == Some(method) {
                return Some(m);
            }
        }
    }

    /// The final response to our request `cseq method`, skipping provisionals, responses of
    /// earlier transactions (resent by a slow SBC) and requests (answering nothing else).
    fn final_response(&self, cseq: u32, method: &str) -> SipText {
        let deadline = Instant::now() + Duration::from_secs(10);
        let answers_ours = |m: &SipText| {
            let mut parts = m.header("CSeq").unwrap_or_default().split_whitespace();
            parts.next().and_then(|n| n.parse::<u32>().ok()) == Some(cseq) && parts.next() == Some(method)
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.recv(left).unwrap_or_else(|| panic!("no final response to {cseq} {method} within 10 s"));
            if m.status().is_some_and(|s| s >= 200) && answers_ours(&m) {
                return m;
            }
        }
    }

    fn request(&mut self, method: &str, uri: &str, cseq: u32, body: &str) -> String {
        self.branch += 1;
        let to = self.to.clone().unwrap_or_else(|| format!("<{uri}>"));
        let ct = if body.is_empty() { String::new() } else { "Content-Type: application/sdp\r\n".into() };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{m}{c}x{b};rport\r\nMax-Forwards: 70\r\nFrom: <sip:ua@{l}>;tag={t}\r\nTo: {to}\r\nCall-ID: {ci}\r\nCSeq: {cseq} {method}\r\nContact: <{contact}>\r\n{x}{ct}Content-Length: {len}\r\n\r\n{body}",
            x = self.extra_headers,
            contact = self.contact.clone().unwrap_or_else(|| format!("sip:ua@{}", self.local)),
            l = self.local,
            m = method,
            c = self.call_id.len(),
            b = self.branch,
            t = self.from_tag,
            ci = self.call_id,
            len = body.len(),
        )
    }

    /// INVITE (a re-INVITE once a dialog exists: `uri` is then ignored) with `body`; returns
    /// the final response and, on a 2xx, acknowledges it.
    pub fn invite(&mut self, uri: &str, body: &str) -> SipText {
        let uri = self.target.clone().unwrap_or_else(|| uri.to_string());
        let uri = uri.as_str();
        self.cseq += 1;
        let cseq = self.cseq;
        let text = self.request("INVITE", uri, cseq, body);
        self.send(&text);
        let resp = self.final_response(cseq, "INVITE");
        if resp.status().is_some_and(|s| (200..300).contains(&s)) {
            if self.to.is_none() {
                self.to = resp.header("To").map(str::to_string);
                self.target =
                    resp.header("Contact").and_then(|c| Some(c.split_once('<')?.1.split_once('>')?.0.to_string()));
            }
            let ack = self.request("ACK", uri, cseq, "");
            self.send(&ack);
        }
        resp
    }

    pub fn bye(&mut self) -> SipText {
        self.cseq += 1;
        let uri = self.target.clone().unwrap_or_default();
        let text = self.request("BYE", &uri, self.cseq, "");
        self.send(&text);
        self.final_response(self.cseq, "BYE")
    }

    /// Answers an INVITE from the SBC with 200, a To tag (a re-INVITE keeps its own), a Contact
    /// and `sdp`.
    pub fn answer(&self, req: &SipText, sdp: &str) {
        let mut resp = String::from("SIP/2.0 200 OK\r\n");
        for l in req.0.split("\r\n").take_while(|l| !l.is_empty()).skip(1) {
            let name = l.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
            match name.as_str() {
                "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" | "record-route" => {
                    resp.push_str(l);
                    resp.push_str("\r\n");
                }
                "to" | "t" if !l.contains(";tag=") => {
                    resp.push_str(&format!("{l};tag=callee{}\r\n", self.local.port()))
                }
                "to" | "t" => resp.push_str(&format!("{l}\r\n")),
                _ => {}
            }
        }
        resp.push_str(&format!(
            "Contact: <sip:ua@{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            self.local,
            sdp.len()
        ));
        self.send(&resp);
    }

    /// Answers a request from the SBC with `status` (`"486 Busy Here"`) and `extra` header
    /// lines (each ending in CRLF); Via, From, Call-ID and CSeq copied, To given a tag.
    pub fn reply(&self, req: &SipText, status: &str, extra: &str) {
        let mut resp = format!("SIP/2.0 {status}\r\n");
        for l in req.0.split("\r\n").take_while(|l| !l.is_empty()).skip(1) {
            let name = l.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
            match name.as_str() {
                "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => resp.push_str(&format!("{l}\r\n")),
                "to" | "t" if !l.contains(";tag=") => {
                    resp.push_str(&format!("{l};tag=callee{}\r\n", self.local.port()))
                }
                "to" | "t" => resp.push_str(&format!("{l}\r\n")),
                _ => {}
            }
        }
        resp.push_str(&format!("{extra}Content-Length: 0\r\n\r\n"));
        self.send(&resp);
    }

    /// Answers a request from the SBC with 200 (Via, From, To, Call-ID, CSeq copied).
    pub fn ok(&self, req: &SipText) {
        let mut resp = String::from("SIP/2.0 200 OK\r\n");
        for l in req.0.split("\r\n").take_while(|l| !l.is_empty()).skip(1) {
            let name = l.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
            if matches!(name.as_str(), "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq") {
                resp.push_str(l);
                resp.push_str("\r\n");
            }
        }
        resp.push_str("Content-Length: 0\r\n\r\n");
        self.send(&resp);
    }
}
