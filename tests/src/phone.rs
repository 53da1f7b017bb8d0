//! A registering phone behind a NAT, over UDP or TCP: its Contact names a private address
//! (127.0.0.9:5099, where nothing listens), so it is only reachable where it sends from —
//! through the connection it opened, on TCP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::ua::SipText;

/// The private address every phone's Contact names.
pub const PRIVATE: &str = "127.0.0.9:5099";

enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream, Vec<u8>),
}

pub struct Phone {
    link: Link,
    sbc: SocketAddr,
    pub user: String,
    cseq: u32,
    branch: u32,
    /// Where the last request came from over UDP: its responses go there (RFC 3261 §18.2.2),
    /// which is not its SBC when another node of a cluster relays to it.
    request_source: Option<SocketAddr>,
}

impl Phone {
    pub fn udp(sbc: SocketAddr, user: &str) -> Self {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind phone");
        Self { link: Link::Udp(s), sbc, user: user.into(), cseq: 0, branch: 0, request_source: None }
    }

    pub fn tcp(sbc: SocketAddr, user: &str) -> Self {
        let s = TcpStream::connect(sbc).expect("connect phone");
        Self { link: Link::Tcp(s, Vec::new()), sbc, user: user.into(), cseq: 0, branch: 0, request_source: None }
    }

    /// Where it listens (its source address).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.link {
            Link::Udp(s) => s.local_addr().expect("addr"),
            Link::Tcp(s, _) => s.local_addr().expect("addr"),
        }
    }

    fn transport(&self) -> &'static str {
        match self.link {
            Link::Udp(_) => "UDP",
            Link::Tcp(..) => "TCP",
        }
    }

    /// The Contact URI it registers.
    pub fn contact(&self) -> String {
        match self.link {
            Link::Udp(_) => format!("sip:{}@{PRIVATE}", self.user),
            Link::Tcp(..) => format!("sip:{}@{PRIVATE};transport=tcp", self.user),
        }
    }

    fn send(&mut self, text: &str) {
        self.send_towards(text, self.sbc);
    }

    /// Sends `text` to `to` over UDP; on TCP, over its connection.
    fn send_towards(&mut self, text: &str, to: SocketAddr) {
        match &mut self.link {
            Link::Udp(s) => {
                s.send_to(text.as_bytes(), to).expect("send");
            }
            Link::Tcp(s, _) => s.write_all(text.as_bytes()).expect("write"),
        }
    }

    /// The next message from the SBC within `within`.
    pub fn recv(&mut self, within: Duration) -> Option<SipText> {
        let deadline = Instant::now() + within;
        match &mut self.link {
            Link::Udp(s) => {
                let mut buf = vec![0u8; 65536];
                while Instant::now() < deadline {
                    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                    s.set_read_timeout(Some(left)).ok()?;
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let m = SipText(String::from_utf8_lossy(&buf[..n]).into_owned());
                        if m.method().is_some() {
                            self.request_source = Some(from);
                        }
                        return Some(m);
                    }
                }
                None
            }
            Link::Tcp(s, pending) => loop {
                if let Some(msg) = frame(pending) {
                    return Some(msg);
                }
                let left = deadline.checked_duration_since(Instant::now())?.max(Duration::from_millis(1));
                s.set_read_timeout(Some(left)).ok()?;
                let mut buf = [0u8; 8192];
                match s.read(&mut buf) {
                    Ok(0) => return None,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(_) if Instant::now() < deadline => continue,
                    Err(_) => return None,
                }
            },
        }
    }

    /// The next request (responses and keep-alives skipped).
    pub fn recv_request(&mut self, within: Duration) -> Option<SipText> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.recv(deadline.saturating_duration_since(Instant::now()))?;
            if m.method().is_some() {
                return Some(m);
            }
        }
    }

    /// REGISTERs its contact (`expires` as Expires header, if given); returns the final answer.
    pub fn register(&mut self, expires: Option<u32>) -> SipText {
        self.try_register(expires).expect("an answer to REGISTER")
    }

    /// [`Self::register`], `None` when no final answer comes within 10 s.
    pub fn try_register(&mut self, expires: Option<u32>) -> Option<SipText> {
        self.cseq += 1;
        self.branch += 1;
        let local = match &self.link {
            Link::Udp(s) => s.local_addr().expect("addr"),
            Link::Tcp(s, _) => s.local_addr().expect("addr"),
        };
        let expires = expires.map(|e| format!("Expires: {e}\r\n")).unwrap_or_default();
        let text = format!(
            "REGISTER sip:registrar.example SIP/2.0\r\nVia: SIP/2.0/{t} {PRIVATE};branch=z9hG4bKph{p}x{b};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{u}@example.com>;tag=ph{p}\r\nTo: <sip:{u}@example.com>\r\nCall-ID: reg-{u}-{p}\r\nCSeq: {c} REGISTER\r\nContact: <{contact}>\r\nUser-Agent: test-phone\r\n{expires}Content-Length: 0\r\n\r\n",
            t = self.transport(),
            p = local.port(),
            b = self.branch,
            u = self.user,
            c = self.cseq,
            contact = self.contact(),
        );
        self.send(&text);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.recv(deadline.saturating_duration_since(Instant::now()))?;
            if m.status().is_some_and(|s| s >= 200) {
                return Some(m);
            }
        }
    }

    /// Takes a call: the INVITE (which `check` looks at first) is answered 200, then the ACK
    /// and the BYE come in either order (SIP allows the BYE first) and the BYE is answered. An
    /// INVITE resent before the 200 reached the SBC is skipped.
    pub fn take_call(&mut self, check: impl FnOnce(&SipText)) {
        let inv = self.recv_request(Duration::from_secs(10)).expect("the INVITE reaches the phone");
        assert_eq!(inv.method(), Some("INVITE"), "{}", inv.0);
        check(&inv);
        self.answer(&inv, 200);
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let req = self.recv_request(Duration::from_secs(10)).expect("ACK and BYE");
            match req.method() {
                Some("INVITE") => continue,
                Some("BYE") => self.answer(&req, 200),
                _ => {}
            }
            seen.push(req.method().unwrap_or_default().to_string());
        }
        seen.sort();
        assert_eq!(seen, ["ACK", "BYE"]);
    }

    /// Answers `req` with `code`; an INVITE's 2xx gets a To tag, a Contact and an SDP answer.
    pub fn answer(&mut self, req: &SipText, code: u16) {
        self.answer_with(req, code, "");
    }

    /// [`Self::answer`] with extra header lines (each ending in CRLF).
    pub fn answer_with(&mut self, req: &SipText, code: u16, extra: &str) {
        let invite = req.method() == Some("INVITE");
        let mut resp = format!("SIP/2.0 {code} Answer\r\n{extra}");
        for l in req.0.split("\r\n").take_while(|l| !l.is_empty()).skip(1) {
            let name = l.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
            match name.as_str() {
                "to" | "t" if invite && !l.contains("tag=") => resp.push_str(&format!("{l};tag=phone\r\n")),
                "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq" => {
                    resp.push_str(l);
                    resp.push_str("\r\n");
                }
                _ => {}
            }
        }
        let body = if invite && code < 300 {
            resp.push_str(&format!("Contact: <{}>\r\nContent-Type: application/sdp\r\n", self.contact()));
            crate::ua::sdp("127.0.0.1", 6000, "")
        } else {
            String::new()
        };
        resp.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send_towards(&resp, self.request_source.unwrap_or(self.sbc));
    }
}

/// One complete message from a stream buffer, if it holds one (CRLF keep-alives skipped).
pub(crate) fn frame(buf: &mut Vec<u8>) -> Option<SipText> {
    while buf.starts_with(b"\r\n") {
        buf.drain(..2);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len = head
        .split("\r\n")
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim().to_ascii_lowercase();
            (n == "content-length" || n == "l").then(|| v.trim().parse::<usize>().ok()).flatten()
        })
        .unwrap_or(0);
    if buf.len() < end + len {
        return None;
    }
    let msg: Vec<u8> = buf.drain(..end + len).collect();
    Some(SipText(String::from_utf8_lossy(&msg).into_owned()))
}
